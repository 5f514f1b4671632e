"""The HTTP layer: routes, request and response models, authentication, admission and error
answers. It knows nothing of SMTP; it reaches the rest through the store, the template catalog
and the worker handed to it in `deps.Services`."""
