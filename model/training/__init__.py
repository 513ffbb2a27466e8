"""Training: the corpus, token files and batches, the repeated-span augmentation, the training loop, its log, and the model card writer."""
