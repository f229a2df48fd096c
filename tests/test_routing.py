"""Tasks go to the queue of the resource they use: ingest and rules on default, LLM runs on llm."""

from config.celery import app


def test_task_routes():
    import labeling.tasks
    import studies.tasks

    route = app.amqp.router.route
    assert route({}, studies.tasks.ingest_upload.name)["queue"].name == "default"
    assert route({}, labeling.tasks.run_labels.name)["queue"].name == "default"
    assert route({}, labeling.tasks.run_llm_labels.name)["queue"].name == "llm"
