"""Agent Stream entry point: `python app.py [serve|create-user|create-api-key] ...`."""
from agent_stream.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
