"""Images from registries (OCI distribution / Docker registry v2): references, credentials, TLS, pull,
push and progress. Imported only when a registry is needed: `netctl run` of an image that is present
never loads this package (see present.py for the one light check it does).
"""
