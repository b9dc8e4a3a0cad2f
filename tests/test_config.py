from dataclasses import dataclass, field

import pytest

from bench.config import ConfigError, apply_overrides, config_hash, parse_set, parse_value


@dataclass(frozen=True)
class Example:
    n: int = 1
    x: float = 0.5
    flag: bool = False
    name: str = "a"
    ratios: list[float] = field(default_factory=lambda: [0.5])
    widths: dict[str, int] = field(default_factory=dict)
    maybe: int | None = None

    def validate(self):
        if self.n < 0:
            raise ValueError("n must be >= 0")


def test_values_are_parsed_by_field_type():
    cfg = apply_overrides(
        Example(),
        {"n": "3", "x": "1e-3", "flag": "yes", "ratios": "0.5,0.25", "widths": "a=1,b=2", "maybe": "none"},
        "example",
    )
    assert (cfg.n, cfg.x, cfg.flag, cfg.ratios, cfg.widths, cfg.maybe) == (
        3,
        1e-3,
        True,
        [0.5, 0.25],
        {"a": 1, "b": 2},
        None,
    )
    assert parse_value('{"a": 4}', dict[str, int]) == {"a": 4}
    assert parse_value("[1, 2]", list[int]) == [1, 2]


@pytest.mark.parametrize(
    "key,value,match",
    [
        ("nope", "1", "unknown setting 'nope' for example; valid: n, x"),
        ("n", "abc", "bad value 'abc' for n of example: expected int"),
        ("n", "1.5", "expected int"),
        ("flag", "maybe", "expected bool"),
        ("widths", "a", "name=value"),
        ("n", "-1", "n must be >= 0"),
    ],
)
def test_bad_settings_give_one_line_errors(key, value, match):
    with pytest.raises(ConfigError, match=match) as err:
        apply_overrides(Example(), {key: value}, "example")
    assert "\n" not in str(err.value)


def test_parse_set_needs_a_scope_and_a_value():
    assert parse_set(["task.teacher_width=24", "method.widths=hidden=8"]) == [
        ("task", "teacher_width", "24"),
        ("method", "widths", "hidden=8"),
    ]
    with pytest.raises(ConfigError, match="scope.key=value"):
        parse_set(["task.teacher_width"])
    with pytest.raises(ConfigError, match="needs a scope"):
        parse_set(["teacher_width=3"])


def test_config_hash_ignores_key_order_and_sees_values():
    assert config_hash({"a": 1, "b": [1, 2]}) == config_hash({"b": [1, 2], "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
