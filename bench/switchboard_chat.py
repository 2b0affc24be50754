"""The chat module of bench/switchboard_app.py: none of the chat hooks, so only delivery is measured."""
