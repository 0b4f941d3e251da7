"""How the project asks the model, below both stages/ and chat/ (and the report's judge).

request.py   build_request: a call kind's complete request (model, sampling, seed and
             priority policy, chat-template arguments) from the config and the RunFacts
ask.py       ask_until_valid, the one retry loop; Outcome; failure records
prompts.py   the Jinja2 templates of prompts/ every call kind renders
"""

from soc_async.calls.ask import DETAIL_CHARS, Outcome, ask_until_valid, failure
from soc_async.calls.request import build_request, choose_model, model_for_item

__all__ = [
    "DETAIL_CHARS",
    "Outcome",
    "ask_until_valid",
    "build_request",
    "choose_model",
    "failure",
    "model_for_item",
]
