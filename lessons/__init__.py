"""The lesson scripts (installed as ``tinylm.lessons``); run them as files or with `tinylm lesson`."""
