"""The stages of :func:`centrifuge.separate`, one file each, in run order:

``source`` (decode) -> ``windows`` (window schedule) -> ``runner`` (the model on a window) -> ``stitch`` (one
slot order across windows and tiles) -> ``compose`` (full resolution) -> sinks (``output``'s layer files,
``stats``, ``previews``' contact sheet) -> finish (``stats``' ``layers.json``, ``previews``' preview video) ->
``output`` (publishing). ``centrifuge.separate`` runs them.
"""
