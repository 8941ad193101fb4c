"""petseg: binary pet/background segmentation on Oxford-IIIT Pet, orchestrated by DVC."""
