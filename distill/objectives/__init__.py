"""What each training phase minimises, one module each; `distill.trainer` runs any of them, `distill.phases`
builds them.

    intermediate   phase 1: MSE on embeddings, hidden states and attention maps (TinyBERT)
    prediction     phase 2: w * KL(teacher || student) * T^2 + (1 - w) * hard-label CE
    finetune       a teacher (or any model) on hard labels alone
    masked_lm      BERT's masked-LM objective, for the augmentation's candidate model

An objective is an `nn.Module` holding what is trained, whose forward takes a padded batch and returns its loss
terms by name; besides it has `columns` (the feature columns it reads), `term_weights`, `pad_token_id`,
`find_unused_parameters`, `check_features`, `settings` and `save_outputs` (`distill.trainer.Objective`).
"""
