"""One generic trainer for every tower: pure jitted steps over a mesh, optax, orbax, grain."""
