"""Reading the Factory API: the client, the poll timetable, the recorder."""
