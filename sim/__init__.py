"""Battery-pack plant for closed-loop tests of the cellguard BMS.

Modules: ``cells`` (chemistry parameters), ``pack`` (cell string, contactors, DC link,
balancing), ``sensors`` (measurement chain in firmware units), ``vehicle`` (drive cycles and
battery power) and ``scenario`` (load-current profiles that obey the BMS limits). Currents are
in amperes, positive = discharge (out of the pack), everywhere.
"""
