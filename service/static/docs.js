// Starts Swagger UI on /docs from local files; no inline script, so the page's CSP stays strict.
'use strict';
window.ui = SwaggerUIBundle({
  url: '/openapi.json',
  dom_id: '#swagger-ui',
  layout: 'BaseLayout',
  presets: [SwaggerUIBundle.presets.apis],
  deepLinking: true,
  validatorUrl: null, // the default would send the spec to an online validator
});
