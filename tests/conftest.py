"""Shared test configuration."""

from hypothesis import HealthCheck, settings

# CI machines are shared and noisy: no deadlines; reproducible examples.
settings.register_profile(
    "stepopt",
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile("stepopt")
