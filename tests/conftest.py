"""Hypothesis settings profiles for the suite's slow, firmware-backed state machines.

`cellguard-ci` is what CI runs (few fixed examples: deterministic and fast). Select the long one
with `--hypothesis-profile cellguard-long` (see docs/fault_injection.md); both exist here because
profiles must be registered before the hypothesis plugin reads its options.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "cellguard-ci",
    max_examples=25,
    stateful_step_count=50,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "cellguard-long",
    max_examples=1_000_000,
    stateful_step_count=150,
    derandomize=False,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
