"""Reading training data and expanding it by word substitution, answers kept valid."""
