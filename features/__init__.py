# This folder is the package basketcast.features (basketcast/features is a symlink to it). Imported under its
# folder's name it would load a second copy of every module, so that name is refused.
if __name__ != "basketcast.features":
    raise ImportError(f"{__name__} is installed as basketcast.features: import basketcast.features instead")
