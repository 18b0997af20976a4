"""callkeeper: a SIP call manager that keeps calls alive when an endpoint fails."""

__version__ = "0.1.0"
