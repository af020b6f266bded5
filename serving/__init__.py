# This folder is the package basketcast.serving (basketcast/serving is a symlink to it). Imported under its
# folder's name it would load a second copy of every module, so that name is refused.
if __name__ != "basketcast.serving":
    raise ImportError(f"{__name__} is installed as basketcast.serving: import basketcast.serving instead")
