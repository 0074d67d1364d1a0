"""mlbook.exercises: checkers for the book's coding exercises, and a student edition.

Each chapter ends its exercises with a few that ask for code: a *stub* cell defines the
function with ``raise NotImplementedError``, and a *check* cell passes it to a checker here,
e.g. ``check_inner_update(my_inner_update)``. A checker tries the function on several cases
(random ones, edge cases such as one shot or one task, and one whose answer is known in
closed form), compares it in float64 with the package's own implementation, and raises
:class:`ExerciseFailed` with a message in words at the first difference ("the meta-gradient
misses the Hessian term"); it prints one line when everything passes.

``python -m mlbook.exercises student-edition OUT_DIR`` writes the chapters without the
solution cells; ``python -m mlbook.exercises grade NOTEBOOK.ipynb`` runs a filled-in one and
prints a pass/fail table (see the book's *Teaching with this book* page).
"""

from mlbook.exercises._checking import EXERCISES, Exercise, ExerciseFailed
from mlbook.exercises.beyond import check_gradient_reversal, check_pcgrad
from mlbook.exercises.episodes import check_confidence_interval, check_episode_sampler
from mlbook.exercises.in_context import check_attention_mask, check_cnp_summary
from mlbook.exercises.maml import (
    check_fomaml_gradient,
    check_inner_update,
    check_quadratic_meta_gradient,
    check_reptile_step,
)
from mlbook.exercises.protonets import check_protonet_loss, check_prototypes
from mlbook.exercises.transfer import (
    check_l2sp_penalty,
    check_linear_probe,
    check_param_groups,
    check_prototype_head,
)

__all__ = [
    "EXERCISES",
    "Exercise",
    "ExerciseFailed",
    "check_attention_mask",
    "check_cnp_summary",
    "check_confidence_interval",
    "check_episode_sampler",
    "check_fomaml_gradient",
    "check_gradient_reversal",
    "check_inner_update",
    "check_l2sp_penalty",
    "check_linear_probe",
    "check_param_groups",
    "check_pcgrad",
    "check_protonet_loss",
    "check_prototype_head",
    "check_prototypes",
    "check_quadratic_meta_gradient",
    "check_reptile_step",
]
