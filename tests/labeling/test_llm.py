"""The ``llm`` labeler against a real chat-completions server on loopback that replies from a script."""

import email.utils
import importlib.util
import socket
import time

import pytest

from labeling.llm import LLMInvalidReply, LLMLabeler, LLMUnavailable, label_many
from labeling.llm.client import retry_after_seconds
from labeling.llm.endpoints import Endpoint
from labeling.llm.labeler import PROMPTS, latest_prompt_version, load_prompt, locate
from labeling.models import LLMCacheEntry
from labeling.types import SCHEMAS
from tests.labeling.llm_server import (
    malformed,
    ok,
    rate_limited,
    reject_json_schema,
    server_error,
    slow,
)

pytestmark = pytest.mark.django_db

SECTIONS = {
    "findings": "The heart is enlarged.  There is a small right\npleural effusion. No pneumothorax.",
    "impression": "Cardiomegaly with small right effusion.",
}


def finding(sentence, code, assertion="present", section="findings", **kw):
    base = {
        "sentence": sentence,
        "section": section,
        "phrase": kw.pop("phrase", ""),
        "assertion": assertion,
        "laterality": "",
        "location": "",
        "size_mm": None,
        "code": code,
    }
    return base | kw


GOOD = {
    "findings": [
        finding("The heart is enlarged.", "Cardiomegaly", phrase="heart is enlarged"),
        # whitespace and case differ from the report; the platform finds the sentence anyway
        finding(
            "there is a small right pleural effusion.",
            "Pleural Effusion",
            laterality="right",
            phrase="effusion",
        ),
        finding("No pneumothorax", "Pneumothorax", "absent", section="FINDINGS:"),
        finding("Cardiomegaly with small right effusion.", "Cardiomegaly", section="impression"),
    ]
}


def labeler(server, **params) -> LLMLabeler:
    """A labeler for ``server``, given in code (a run's params name a configured endpoint instead)."""
    defaults = {
        "model": "test-model",
        "timeout": 0.5,
        "max_retries": 3,
        "backoff_base": 0.01,
        "backoff_cap": 0.05,
        "temperature": 0.0,
        "seed": 7,
    }
    return LLMLabeler(defaults | params, endpoint=Endpoint(name="test", base_url=server.base_url))


def test_good_answer_gives_proposals_located_in_the_section_text(llm_server):
    llm_server.push(ok(GOOD))
    result = labeler(llm_server).label(SECTIONS, schema="chexpert")
    spans = [(p.code, p.section, SECTIONS[p.section][p.start : p.end], p.assertion) for p in result.proposals]
    assert spans == [
        ("Cardiomegaly", "findings", "The heart is enlarged.", "present"),
        ("Pleural Effusion", "findings", "There is a small right\npleural effusion.", "present"),
        ("Pneumothorax", "findings", "No pneumothorax.", "absent"),
        ("Cardiomegaly", "impression", "Cardiomegaly with small right effusion.", "present"),
    ]
    assert result.proposals[1].laterality == "right"
    assert result.proposals[0].phrase == "heart is enlarged"
    assert result.tokens_in > 50 and result.tokens_out > 10
    assert result.raw_reply.startswith('{"findings"')
    assert result.warnings == []


def test_cost_from_usage_and_prices(llm_server):
    llm_server.push(ok(GOOD, usage={"prompt_tokens": 1000, "completion_tokens": 200}))
    result = labeler(llm_server, price_in=2.0, price_out=10.0).label(SECTIONS, schema="chexpert")
    assert (result.tokens_in, result.tokens_out) == (1000, 200)
    assert result.cost == pytest.approx((1000 * 2.0 + 200 * 10.0) / 1e6)


def test_sentence_not_in_report_is_dropped_with_a_warning(llm_server):
    made_up = finding("The lungs show a large mass.", "Lung Lesion")
    llm_server.push(ok({"findings": [made_up, GOOD["findings"][0]]}))
    result = labeler(llm_server).label(SECTIONS, schema="chexpert")
    assert [p.code for p in result.proposals] == ["Cardiomegaly"]
    assert len(result.warnings) == 1 and "sentence not in the report" in result.warnings[0]


def test_wrong_section_name_is_located_in_the_section_that_holds_the_sentence():
    assert locate(SECTIONS, "impression", "no PNEUMOTHORAX.") == ("findings", 65, 81)
    assert SECTIONS["findings"][65:81] == "No pneumothorax."
    assert locate(SECTIONS, "findings", "Pleural effusion is large.") is None


def test_request_records_model_temperature_seed_and_schema(llm_server):
    llm_server.push(ok(GOOD))
    lab = labeler(llm_server, temperature=0.2, seed=11)
    lab.label(SECTIONS, schema="chexpert")
    (sent,) = llm_server.requests
    assert (sent["model"], sent["temperature"], sent["seed"]) == ("test-model", 0.2, 11)
    fmt = sent["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "chexpert_findings"
    assert fmt["json_schema"]["strict"] is True
    assert "Cardiomegaly with small right effusion." in sent["messages"][-1]["content"]
    assert lab.recorded() == {
        "model": "test-model",
        "endpoint": "test",
        "prompt_version": "v1",
        "temperature": 0.2,
        "seed": 11,
        "labeler_version": lab.version,
    }


def test_malformed_json_then_good_succeeds_after_retry(llm_server):
    llm_server.push(malformed(), ok({"findings": [{"code": "Cardiomegaly"}]}), ok(GOOD))
    result = labeler(llm_server).label(SECTIONS, schema="chexpert")
    assert len(llm_server.requests) == 3  # broken JSON, then JSON that misses the schema, then good
    assert len(result.proposals) == 4
    assert "answered after 3 attempts" in result.warnings


def test_always_malformed_fails_with_the_raw_reply_kept(llm_server):
    llm_server.responder = lambda request: malformed("Sure! Here are the findings: cardiomegaly")
    with pytest.raises(LLMInvalidReply) as info:
        labeler(llm_server, max_retries=2).label(SECTIONS, schema="chexpert")
    assert info.value.raw_reply == "Sure! Here are the findings: cardiomegaly"
    assert "invalid reply after 3 attempts" in str(info.value) and "not JSON" in str(info.value)
    assert len(llm_server.requests) == 3
    assert not LLMCacheEntry.objects.exists()  # a failed reply is never cached


def test_429_retry_after_is_honoured(llm_server):
    llm_server.push(rate_limited("1"), ok(GOOD))
    start = time.monotonic()
    result = labeler(llm_server).label(SECTIONS, schema="chexpert")
    assert time.monotonic() - start >= 1.0
    assert len(result.proposals) == 4 and len(llm_server.requests) == 2


def test_retry_after_header_forms():
    assert retry_after_seconds("3") == 3.0
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= retry_after_seconds(date, now=now) <= 31


def test_500_then_ok(llm_server):
    llm_server.push(server_error(500), server_error(503), ok(GOOD))
    result = labeler(llm_server).label(SECTIONS, schema="chexpert")
    assert len(result.proposals) == 4 and len(llm_server.requests) == 3


def test_persistent_500_fails_with_reason(llm_server):
    llm_server.responder = lambda request: server_error(502)
    with pytest.raises(LLMUnavailable, match=r"HTTP 502 .*gave up after 3 attempts"):
        labeler(llm_server, max_retries=2).label(SECTIONS, schema="chexpert")


def test_slow_reply_beyond_the_timeout_then_ok(llm_server):
    llm_server.push(slow(1.5), ok(GOOD))
    start = time.monotonic()
    result = labeler(llm_server, timeout=0.3).label(SECTIONS, schema="chexpert")
    assert time.monotonic() - start < 1.5  # did not wait for the slow reply
    assert len(result.proposals) == 4 and len(llm_server.requests) == 2


def test_always_slow_fails_saying_timeout(llm_server):
    llm_server.responder = lambda request: slow(1.0)
    with pytest.raises(LLMUnavailable, match="no reply within the 0.2 s timeout"):
        labeler(llm_server, timeout=0.2, max_retries=1).label(SECTIONS, schema="chexpert")


def test_endpoint_down_gives_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    lab = LLMLabeler(
        {"model": "m", "max_retries": 1, "backoff_base": 0.01},
        endpoint=Endpoint(name="local", base_url=f"http://127.0.0.1:{port}/v1"),
    )
    with pytest.raises(LLMUnavailable, match=r"cannot connect to endpoint 'local'.*gave up") as info:
        lab.label(SECTIONS, schema="chexpert")
    assert str(port) not in str(info.value)  # the error names the endpoint; its URL goes to the log only


def test_json_schema_rejected_falls_back_to_json_object(llm_server):
    llm_server.push(reject_json_schema(), ok(GOOD))
    result = labeler(llm_server).label(SECTIONS, schema="chexpert")
    assert [r["response_format"]["type"] for r in llm_server.requests] == ["json_schema", "json_object"]
    assert len(result.proposals) == 4


def test_cache_makes_the_second_run_free(llm_server):
    llm_server.push(ok(GOOD))
    first = labeler(llm_server).label(SECTIONS, schema="chexpert")
    second = labeler(llm_server).label(SECTIONS, schema="chexpert")  # a new labeler: the cache is in the DB
    assert len(llm_server.requests) == 1
    assert second.proposals == first.proposals and second.raw_reply == first.raw_reply
    assert (second.tokens_in, second.tokens_out, second.cost) == (0, 0, 0.0)
    entry = LLMCacheEntry.objects.get()
    assert (entry.model_name, entry.prompt_version) == ("test-model", "v1")
    # another model, prompt version or schema is another key
    llm_server.push(ok(GOOD))
    labeler(llm_server, model="other").label(SECTIONS, schema="chexpert")
    assert len(llm_server.requests) == 2


def test_every_schema_has_a_versioned_prompt(llm_server):
    assert latest_prompt_version() == "v1"
    for schema in SCHEMAS:
        assert (PROMPTS / f"{schema}_v1.md").is_file()
        system, user = load_prompt(schema, "v1")
        assert system and "{{report}}" in user
    llm_server.push(
        ok(
            {
                "findings": [
                    finding(
                        "No pneumothorax.", "2g", "absent", region="L", abnormal=False, refers_to_prior=False
                    )
                ]
            }
        ),
        ok({"findings": [finding("The heart is enlarged.", "suv", suvmax=4.2, slice=88)]}),
    )
    rex = labeler(llm_server).label(SECTIONS, schema="rexgroundingct")
    assert rex.proposals[0].extra == {"region": "L", "abnormal": False, "refers_to_prior": False}
    pet = labeler(llm_server).label(SECTIONS, schema="petct")
    assert pet.proposals[0].extra == {"suvmax": 4.2, "slice": 88}


def test_label_many_bounds_concurrency_and_keeps_failures_in_place(llm_server):
    llm_server.delay = 0.2
    llm_server.push(*[ok(GOOD)] * 3, server_error(400), *[ok(GOOD)] * 4)
    reports = [dict(SECTIONS, impression=f"Report {i}. " + SECTIONS["impression"]) for i in range(8)]
    lab = labeler(llm_server, concurrency=4, cache=False)
    start = time.monotonic()
    outcomes = label_many(lab, reports, schema="chexpert")
    elapsed = time.monotonic() - start
    assert 0.4 <= elapsed < 1.4  # 8 requests of 0.2 s: at most 4 at a time (>= 0.4 s), not one by one (1.6 s)
    failed = [i for i, o in enumerate(outcomes) if isinstance(o, Exception)]
    assert len(failed) == 1 and "HTTP 400" in str(outcomes[failed[0]])
    assert all(len(o.proposals) == 4 for o in outcomes if not isinstance(o, Exception))


def test_run_finishes_every_report_it_can_and_says_why_the_others_failed(llm_server, project, settings):
    """Through label_run_execute, on the ``default`` endpoint of the settings."""
    from labeling import services
    from labeling.models import RunReport
    from studies.models import Report

    for i in range(3):
        Report.objects.create(
            project=project,
            external_id=f"r{i}",
            source="csv",
            raw_text="x",
            checksum=str(i),
            findings=SECTIONS["findings"] + f" Case {i}.",
        )
    settings.LLM_BASE_URL = llm_server.base_url
    params = {"model": "m", "max_retries": 1, "backoff_base": 0.01}
    params["concurrency"] = 1  # the script is consumed in report order
    llm_server.push(ok(GOOD), malformed(), malformed(), ok(GOOD))
    run = services.label_run_get_or_create(project=project, labeler="llm", params=params)
    run = services.label_run_execute(run=run)
    assert (run.done, run.failed) == (2, 1)
    (bad,) = RunReport.objects.filter(run=run, ok=False)
    assert bad.error.startswith("LLMInvalidReply: invalid reply after 2 attempts")
    # the re-run retries only the failed report
    llm_server.push(ok(GOOD))
    run = services.label_run_execute(run=run)
    assert (run.done, run.failed) == (3, 0)
    assert len(llm_server.requests) == 5


# -- ensemble ---------------------------------------------------------------------------------------------

HEART = finding("The heart is enlarged.", "Cardiomegaly")
PTX_ABSENT = finding("No pneumothorax.", "Pneumothorax", "absent")
PTX_PRESENT = finding("No pneumothorax.", "Pneumothorax", "present")


def by_model(answers: dict):
    return lambda request: ok({"findings": answers[request["model"]]})


def llm_member(server, model):
    """An ensemble member on the ``default`` endpoint (``server``: the tests point the settings at it)."""
    return {"labeler": "llm", "model": model, "max_retries": 0, "cache": False}


@pytest.fixture
def default_endpoint(llm_server, settings):
    settings.LLM_BASE_URL = llm_server.base_url
    return llm_server


def test_ensemble_of_llm_models_votes_and_flags_disagreement(llm_server, default_endpoint):
    from labeling.llm import EnsembleLabeler

    llm_server.responder = by_model(
        {"a": [HEART, PTX_ABSENT], "b": [HEART, PTX_PRESENT], "c": [HEART, PTX_ABSENT, GOOD["findings"][3]]}
    )
    ens = EnsembleLabeler({"members": [llm_member(llm_server, m) for m in "abc"]})
    assert (ens.name, ens.model_name, ens.prompt_version) == ("ensemble", "a+b+c", "v1,v1,v1")
    result = ens.label(SECTIONS, schema="chexpert")
    got = {(p.code, p.section): p for p in result.proposals}
    assert len(got) == 3 and len(llm_server.requests) == 3
    heart = got["Cardiomegaly", "findings"]
    assert heart.assertion == "present" and heart.extra["disagreement"] is False
    assert heart.extra["votes"] == {"llm:a": "present", "llm:b": "present", "llm:c": "present"}
    ptx = got["Pneumothorax", "findings"]
    assert ptx.assertion == "absent" and ptx.extra["disagreement"] is True
    assert ptx.extra["votes"] == {"llm:a": "absent", "llm:b": "present", "llm:c": "absent"}
    assert SECTIONS["findings"][ptx.start : ptx.end] == "No pneumothorax."
    only_c = got["Cardiomegaly", "impression"]
    assert only_c.extra["disagreement"] is True and only_c.extra["votes"]["llm:a"] == "not mentioned"
    assert result.tokens_in > 0 and set(__import__("json").loads(result.raw_reply)) == {
        "llm:a",
        "llm:b",
        "llm:c",
    }
    # min_votes drops what only a minority proposed
    ens2 = EnsembleLabeler({"members": [llm_member(llm_server, m) for m in "abc"], "min_votes": 2})
    assert len(ens2.label(SECTIONS, schema="chexpert").proposals) == 2


def test_ensemble_tie_is_uncertain_and_member_failure_fails_the_report(llm_server, default_endpoint):
    from labeling.llm import EnsembleLabeler
    from labeling.llm.ensemble import EnsembleMemberError

    llm_server.responder = by_model({"a": [PTX_ABSENT], "b": [PTX_PRESENT]})
    ens = EnsembleLabeler({"members": [llm_member(llm_server, "a"), llm_member(llm_server, "b")]})
    (ptx,) = ens.label(SECTIONS, schema="chexpert").proposals
    assert ptx.assertion == "uncertain" and ptx.extra["disagreement"] is True
    llm_server.push(ok({"findings": [PTX_ABSENT]}), malformed("oops"))
    with pytest.raises(EnsembleMemberError, match="member llm:b failed: LLMInvalidReply") as info:
        ens.label(SECTIONS, schema="chexpert")
    assert '"llm:b": "oops"' in info.value.raw_reply


@pytest.mark.skipif(importlib.util.find_spec("labeling.rules") is None, reason="labeling.rules not there yet")
def test_ensemble_of_rules_and_llm(llm_server, default_endpoint):
    from labeling.llm import EnsembleLabeler

    # the LLM agrees with the rules except on the pneumothorax and misses the impression's effusion
    llm_server.responder = by_model({"m": GOOD["findings"][:2] + [PTX_PRESENT, GOOD["findings"][3]]})
    ens = EnsembleLabeler({"members": [{"labeler": "rules"}, llm_member(llm_server, "m")]})
    result = ens.label(SECTIONS, schema="chexpert")
    flagged = {(p.code, p.section): p.extra["votes"] for p in result.proposals if p.extra["disagreement"]}
    assert flagged == {
        ("Pneumothorax", "findings"): {"rules": "absent", "llm:m": "present"},
        ("Pleural Effusion", "impression"): {"rules": "present", "llm:m": "not mentioned"},
    }
    assert len(result.proposals) == 5
