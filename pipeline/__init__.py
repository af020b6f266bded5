# This folder is the package basketcast.pipeline (basketcast/pipeline is a symlink to it). Imported under its
# folder's name it would load a second copy of every module, so that name is refused.
if __name__ != "basketcast.pipeline":
    raise ImportError(f"{__name__} is installed as basketcast.pipeline: import basketcast.pipeline instead")
