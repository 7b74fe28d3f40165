"""The pieces of fine-tuning, one job each; `tunewise.models.train` puts them together.

batches (examples to padded batches), loss (completion-only cross-entropy), adapters (LoRA
injection), speed (device settings that change speed, not results), schedule (learning rates and
the learning curve's decay branches), checkpoint (resumable state on disk), loop (the steps).
"""
