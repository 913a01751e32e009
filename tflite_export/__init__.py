"""fedkeys: tflite_export."""
