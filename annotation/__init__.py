"""Expert review: findings, annotation versions, review tasks, QA, history, agreement."""
