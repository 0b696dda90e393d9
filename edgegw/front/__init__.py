"""The front door's declarative rules: CORS (``cors.py``), header rules and their
templates (``rules.py``), security headers and path rewrites, compiled once per config
(``edge.py``) and applied by the pipeline. ``model.py`` holds their validated config;
``edgegw/config/front.py`` reads it from gateway.yaml (docs/configuration.md)."""
