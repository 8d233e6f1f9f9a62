"""Model cards: render a saved model's README.md (Hub metadata + body) and plots from its training record.

One concept per module; a new card section has one home:

- `render`: the Jinja2 environment, `build_model_card` / `write_model_card`, the generated-card mark.
- `context`: the template variables, one builder per section (backbone, data, strategy, hyperparameters, run,
  epochs, final evaluation, versions). A new section of the body is a builder here plus its block in the
  templates (top-level `model_cards/`, shipped as `hubtl.model_cards`).
- `metadata`: the YAML header the Hub reads (tags, pipeline tag, base model, datasets, model-index).
- `plots`: the matplotlib figures under training/ (per step when the record has step rows, the kept epoch marked).
- `formatting`: metric names, the main metric, and numbers and values as table text.
- `public`: what may be published: local paths as their names, a local backbone as its base model's Hub ID
  (the card shows these, and `hubtl push` uploads the training record and config.json in this form).

Task and strategy wording is not kept here: the template, the task phrase, the pipeline tag and the task's tags
come from `hubtl.tasks`, and the strategy sentence and its config keys from `hubtl.strategies`.
"""

from ..layout import README_NAME, TRAINING_DIR, TrainingRecord, read_training_record
from .context import EXAMPLE_TEXTS
from .plots import CONFUSION_PNG, CURVES_PNG, PLOT_FILES, write_plots
from .render import CARD_FILES, GENERATED_MARK, build_model_card, is_generated_card, write_model_card

__all__ = [
    "CARD_FILES",
    "CONFUSION_PNG",
    "CURVES_PNG",
    "EXAMPLE_TEXTS",
    "GENERATED_MARK",
    "PLOT_FILES",
    "README_NAME",
    "TRAINING_DIR",
    "TrainingRecord",
    "build_model_card",
    "is_generated_card",
    "read_training_record",
    "write_model_card",
    "write_plots",
]
