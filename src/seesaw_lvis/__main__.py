from seesaw_lvis.cli import main

raise SystemExit(main())
