"""The project's Optuna sweeper for Hydra (``hydra/sweeper=rl_optuna``; ``lr_search`` and the
``hparams_search=`` configs build on it). Hydra finds it by scanning the ``hydra_plugins``
namespace package; the sweeper is in `sweeper`, the search-space syntax in `space`."""
