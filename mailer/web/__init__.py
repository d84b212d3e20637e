"""The web face (front-end): the app factory, its pages and their guards."""
