"""Controls of the notice (国卫办医政函〔2025〕262号), one module each; hooks in gateway/plugin.py."""
