"""Everything visionq keeps in Redis: the key names, the Lua scripts and the modules that
own each family of keys. Nothing outside this package names one of our keys or holds Lua."""
