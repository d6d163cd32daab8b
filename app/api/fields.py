"""Field types the doors' request models share."""

from pydantic import BeforeValidator


def _not_a_bool(value):
    # Pydantic's lax mode reads true/false as 1/0 for numbers; for a speed or a seed that is a client's mistake
    if isinstance(value, bool):
        raise ValueError("expected a number, not true or false")
    return value


NotABool = BeforeValidator(_not_a_bool)
