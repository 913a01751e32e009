"""fedkeys: keyboard. The text-in suggestion path without TensorFlow: a numpy forward pass of the
next-word model (`keyboard.forward`) and the strip a keyboard shows for typed text
(`keyboard.strip`). The collector's `/keyboard` page and `fedkeys suggest` both use it."""
