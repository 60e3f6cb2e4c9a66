"""The bench runtime: the firmware as a device under test, CAN links to it, the closed loop, fault
injection, the pytest plugin and run reports."""
