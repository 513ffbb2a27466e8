// Starts Swagger UI on /docs (templates/docs.html loads this deferred, after the bundle).
// A file, not an inline script: the Content-Security-Policy allows scripts from this origin only.
// validatorUrl: null — by default Swagger UI asks validator.swagger.io for a badge; nothing leaves the machine.
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  presets: [SwaggerUIBundle.presets.apis],
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
});
