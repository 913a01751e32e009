"""WSGI entry point: `gunicorn server.wsgi:app` with $FEDKEYS_SERVER_CONFIG set, or
`gunicorn "server.app:create_app(config_path='server.json')"`."""

from server.app import create_app

app = create_app()
