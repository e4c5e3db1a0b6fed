"""A Report's renderers (terminal, HTML, TensorBoard, the live view) and its assembly."""
