"""The HTTP front end: one ASGI app (`clm serve`) for collection, health and /clm.js."""
