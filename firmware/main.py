# Runs at boot (after boot.py): start the insole.
import app

app.main()
