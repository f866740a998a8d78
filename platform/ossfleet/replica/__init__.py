"""A model replica's side: the pull loop and one request's generation."""
