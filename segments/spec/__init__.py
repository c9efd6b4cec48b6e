"""The spec language: typed models and the parser that validates YAML into them."""
