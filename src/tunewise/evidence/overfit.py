"""Overfitting check from per-epoch losses: is the fine-tune memorising rather than learning?"""

from __future__ import annotations

from tunewise.results import EpochLoss, Overfitting

RISE = 0.02  # validation loss must rise >2% above its minimum: smaller wiggles are evaluation noise
GAP = 0.50  # final train loss more than 50% below val loss: the model fits train far better than unseen data


def detect_overfitting(candidate: str, epochs: list[EpochLoss]) -> Overfitting:
    """Flag a validation-loss rise after its minimum while training loss keeps falling, or a large
    final train/val gap. The reason cites the losses so a reader can check the call."""
    eps = sorted(epochs, key=lambda e: e.epoch)
    out = Overfitting(candidate=candidate, epochs=eps, flag=False, reason="")
    val = [e for e in eps if e.val_loss is not None]
    if not val:
        out.reason = ("no validation losses were recorded, so overfitting cannot be checked"
                      if eps else "no losses were recorded, so overfitting cannot be checked")
        return out

    reasons = []
    best = min(val, key=lambda e: e.val_loss)
    later = [e for e in val if e.epoch > best.epoch and e.train_loss < best.train_loss
             and e.val_loss > best.val_loss * (1 + RISE)]
    if later:
        worst = max(later, key=lambda e: e.val_loss)
        rise = worst.val_loss / best.val_loss - 1 if best.val_loss > 0 else float("inf")
        reasons.append(f"validation loss rose from {best.val_loss:.3f} at epoch {best.epoch:g} to "
                       f"{worst.val_loss:.3f} at epoch {worst.epoch:g} (+{rise:.0%}) while training loss fell "
                       f"from {best.train_loss:.3f} to {worst.train_loss:.3f}")
    last = val[-1]
    if last.val_loss > 0 and last.val_loss - last.train_loss > GAP * last.val_loss:
        reasons.append(f"the final training loss {last.train_loss:.3f} is "
                       f"{1 - last.train_loss / last.val_loss:.0%} below the validation loss {last.val_loss:.3f}")
    if reasons:
        out.flag = True
        out.reason = "; ".join(reasons) + ": the model fits its training data better than unseen data"
    else:
        out.reason = (f"validation loss reached {best.val_loss:.3f} at epoch {best.epoch:g} and did not rise more "
                      f"than {RISE:.0%} after it; the final train/validation gap "
                      f"({last.train_loss:.3f} vs {last.val_loss:.3f}) is within {GAP:.0%}")
    return out
