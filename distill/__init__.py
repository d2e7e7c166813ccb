"""Teacher labelling, two-phase distillation, evaluation and export."""
