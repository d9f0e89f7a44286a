"""The dashboard of `clm serve`: Jinja2 pages over `clm.server.views`, local assets."""
