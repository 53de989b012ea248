"""Feature-guided score diffusion."""
