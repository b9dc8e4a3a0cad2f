"""The tasks' training recipes: one per scale and model family."""

import pytest
from conftest import task_variants

from bench.registry import get_task_class

VARIANTS = task_variants()


@pytest.mark.parametrize("name, overrides", [(n, o) for _, n, o in VARIANTS], ids=[i for i, _, _ in VARIANTS])
def test_every_scale_and_family_has_a_recipe_that_grows_with_the_scale(name, overrides):
    cls = get_task_class(name)
    recipes = [cls(cls.Config(**overrides), scale=s).recipe() for s in ("smoke", "small", "full")]
    steps = [r.steps for r in recipes]
    assert steps == sorted(steps) and steps[0] >= 1
    assert all(r.lr > 0 and r.batch_size >= 1 for r in recipes)
