"""The OpenAPI spec fuzzed with Schemathesis over every documented operation and body (all media types), with
schema-valid and schema-invalid data: no 5xx, and no answer that contradicts the spec (statuses, media types,
response schemas, headers). Derandomized, a bounded count per operation and mode, so CI runs the same cases.

Left out: Schemathesis's "schema-valid data must be accepted" check. The spec cannot say what the service
refuses on purpose beyond types (an empty name, text with nothing to speak, a voice that does not exist), so
those answer a documented 4XX.
"""

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.support.server import live_server, long_settings

EXAMPLES = 25
RUNS = settings(
    max_examples=EXAMPLES, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


def test_the_spec_holds_for_generated_requests(tmp_path):
    with live_server(long_settings(tmp_path)) as (url, _app):
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        failures, operations = [], 0
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @RUNS
                @given(case=operation.as_strategy(generation_mode=mode))
                def run(case):
                    case.call_and_validate(excluded_checks=[positive_data_acceptance])

                try:
                    run()
                except Unsatisfiable:  # nothing to make invalid (no parameters, or any string is valid)
                    assert mode is GenerationMode.NEGATIVE, operation.label
                except Exception as exc:  # noqa: BLE001 - every operation's failures, reported together
                    failures.append(f"{operation.label} ({mode.value}): {str(exc)[:800]}")
        assert operations >= 14, operations
        assert not failures, "\n\n".join(failures)
