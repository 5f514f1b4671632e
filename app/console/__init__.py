"""The console: web pages for people, beside the JSON API, in the same process.

It shows what the signed-in key may see (app.api.callers), reads through the same store and
renders templates through the same catalog as the API, and acts through the same store methods.
It may import from app.api (callers, keys, ownership, views), app.store and app.rendering; the API
imports nothing from here.
"""
