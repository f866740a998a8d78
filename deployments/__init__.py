"""Ray Serve applications built from the ossfleet config."""
