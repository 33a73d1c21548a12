"""Stage 3: the recommender — features from the tables, CTR models with the LARR scene encoder,
metrics. ``features`` turns a data directory into tensors, ``models`` holds the nn.Modules,
losses and save/load, ``metrics`` AUC/GAUC/logloss."""
