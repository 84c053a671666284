"""A user's own package, outside this repository's: an agent and a curriculum env that train
under the launcher through `examples/cfgs` on `hydra.searchpath` (docs/BRING_YOUR_OWN.md)."""
