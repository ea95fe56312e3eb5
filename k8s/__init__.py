"""k8s: the ChampionChallenger resource and the promotion controller."""
