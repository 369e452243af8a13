"""Built-in actions (one module each) and the action contract."""

from rulekit.actions.base import Action, ActionContext

__all__ = ["Action", "ActionContext"]
