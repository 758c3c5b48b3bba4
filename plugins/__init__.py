"""In-tree plugins; each is found through the zeroserve.plugins entry-point group."""
