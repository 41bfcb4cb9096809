from stepopt.cli import run

run()
